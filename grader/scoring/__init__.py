"""How points are made: rubrics (``rubric``), episode statistics (``stats``), the baselines files
(``baselines``) and the composition of a submission's points (``points``)."""
