"""Event-camera data: readers (``readers.py``), events -> frames (``frames.py``), the frame cache
(``cache.py``), the offline stand-in ``digits_dvs`` (``digits_dvs.py``) and the dataset loader
(``loader.py``) that ``jsnn.data.load_dataset`` calls for the event datasets.
"""
from jsnn.data.events.frames import FrameSettings, frame_events, frame_shape

__all__ = ["FrameSettings", "frame_events", "frame_shape"]
