"""Live segmentation: ``cpnet demo`` (``demo/webcam.py``) and its parts.

- :mod:`demo.sources`: what a source string means (camera index, video file, image folder,
  RTSP/HTTP URL, GStreamer pipeline, ``csi``), opening it with one-line failures,
  reconnecting a lost live source with backoff, and what this OpenCV build can do;
- :mod:`demo.live_loop`: the threads (capture keeps only the newest frame and counts the
  drops; inference; drawing; the display/writer in the main thread) and their timings;
- :mod:`demo.render`: overlay / side-by-side / mask drawing, the legend, the HUD and the
  context-prior view;
- :mod:`demo.tegrastats`: GPU load and board power on a Jetson, where ``tegrastats`` runs;
- :mod:`demo.webcam`: the command.

Stage order: ``demo`` imports from ``cpnet``, ``quantize`` and ``engines``; nothing imports
``demo``. Nothing here imports PyTorch: the demo runs on a deploy-only install.
"""
