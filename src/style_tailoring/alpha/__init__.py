"""Stickers with transparency: the paper's alpha decoder (`decoder`), RGBA data and the alpha metrics (`matte`),
their measurement against the 3-channel decoder and a background-threshold baseline (`measure`), and the command
line `python -m style_tailoring.alpha action={train,measure,grid}`."""
