"""Animated stickers: a sticker image and a prompt become a short loop (the Animated Stickers seed).

sample.py   the sampling loop on an animation pipeline (the motion UNet itself is models/motion.py);
metrics.py  the animation metrics, given the judges from config; evaluate.py an evaluation over a folder of stickers.
The ensemble-of-teachers stage, which rates and keeps clips, is curation: hitl/teachers.py.
"""
