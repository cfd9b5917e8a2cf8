"""The HITL data engine: rounds of generate → rate → curate → finetune (`python -m style_tailoring.hitl`), the
rating app for people (`python -m style_tailoring.hitl.serve round_dir=ROUND_DIR`), ratings files (CSV, Label
Studio) and the ensemble of teachers with its student. The raters and selection rules themselves live in
style_tailoring.curation.
"""
