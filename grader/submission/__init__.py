"""What was handed in: gathering a submission's files (``bundle``), what kind of file each is
(``filekind``), reading an untrusted ONNX file (``onnx_model``), the checks before any episode
(``checks``) and the probe states those checks look at a model on (``probestates``)."""
