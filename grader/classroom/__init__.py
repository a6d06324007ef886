"""Grading a class: a class folder and roster (``classdir``, ``roster``), the LMS round trip
(``lms``), the batch grader (``batch``, ``batch_ray``, ``slots``, ``jobs``), the gradebook
(``gradebook``), duplicate detection (``duplicates``) and the class exports (``exports``)."""
