"""Gradescope: the autograder zip and ``results.json`` (``autograder``), with the zip's
``setup.sh`` and ``run_autograder`` templates (``templates/``)."""
