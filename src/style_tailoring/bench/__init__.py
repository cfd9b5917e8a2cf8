"""Speed benchmarks: `python -m style_tailoring.bench [task=train|sample|generate|animate|families]
[arch=world|tiny|sd15|world_sd3|tiny_sd3]`.

Each times this repository's way against a reference in one process, on the same model, data and batch size,
interleaved and repeated (the median is kept): train.py the training step against diffusers' training example for the
model's family (train_text_to_image.py for a UNet, train_dreambooth_lora_sd3.py for an SD3-family transformer),
sample.py the samplers against plain sampling, generate.py the HITL loop's batched generation + rating against one
prompt at a time, animate.py an animation at few DPM-Solver steps against 25 DDIM steps, families.py the flow family's
step against the UNet family's at about the same parameter count. common.py holds the benchmark data, model, timers
and counters. Every one ends with lines for scripts.
"""
