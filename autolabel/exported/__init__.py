"""What an exported student is and how it is checked, below the stages that use it.

* ``options``: the export variants (``ExportOptions``) and whether this machine can produce one;
* ``runtimes``: the exported file's runtimes (ONNX Runtime, OpenVINO, ultralytics' AutoBackend)
  and the raw head outputs compared against PyTorch;
* ``parity``: the parity check (raw outputs, boxes matched one-to-one, mAP, class names);
* ``manifest``: the files next to an export (``exports.json``, ``latency.json``).

``autolabel.export`` (the stage), ``autolabel.latency`` and ``autolabel.model_card`` build on
these; nothing here imports them.
"""
