"""Evaluation: sample a pipeline, then FID/KID, CLIP score, scene diversity and judge scores; standalone runs."""
