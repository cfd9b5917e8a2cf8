"""Curation (the paper's HITL data engine): rate model generations and select Alignment and Style sets from them.

Data in, data out: candidates are an imagefolder with provenance (`metadata.jsonl`: file_name, text, prompt, seed,
model, round), ratings are rows (file_name, rater, aligned 0/1, style 1-5), curated sets are imagefolders again.
This room holds the raters and the selection rules; the loop that generates, rates, curates and finetunes round
after round builds on them (`style_tailoring.hitl`).
"""
