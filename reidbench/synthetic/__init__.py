"""Synthetic datasets written in the REAL on-disk layouts (DESIGN.md, "Data contracts").

``reid`` writes the Market-1501 layout with body keypoints, ``faces`` the LFW layout with
5-point landmarks; ``reid_render`` and ``faces_render`` draw the images, the generators plan the
files and write them through one overwrite-safe ``writer.SynthWriter``. ``sets`` registers both
as datasets that are generated into the data root when missing.
"""
