"""Small helpers shared by the lesson scripts.

Each module does one job, so a reader who wants to change how devices are
picked (device.py), how data is found (data.py) or how checkpoints are
written (checkpoint.py) knows where to look. The models, `train` and `test`
stay in the lesson scripts.
"""
