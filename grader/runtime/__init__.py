"""Where a model runs: the evaluation engine (``engine``) and its sandboxed worker processes
(``worker``), the plain-data channel between them (``channel``), the isolation primitives
(``bwrap``) and the episode video recorder (``video``)."""
