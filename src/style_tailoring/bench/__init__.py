"""Speed benchmarks: `python -m style_tailoring.bench [task=train|sample|generate|animate] [arch=world|tiny|sd15]`.

Each times this repository's way against a reference in one process, on the same model, data and batch size,
interleaved and repeated (the median is kept): train.py the training step against diffusers' train_text_to_image.py
loop, sample.py the samplers against plain sampling, generate.py the HITL loop's batched generation + rating against
one prompt at a time, animate.py an animation at few DPM-Solver steps against 25 DDIM steps. common.py holds the
benchmark data, model, timers and counters. Every one ends with lines for scripts.
"""
