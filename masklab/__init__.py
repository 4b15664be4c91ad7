"""Masked image modeling you can read, run and reproduce: SimMIM and MSN as literate nbdev notebooks

Modules:

- `masklab.encoders`: timm's ViT, BEiT and Swin with SimMIM's mask token, and timm's ViT with MSN's token drop: what the encoder sees of a masked image.
- `masklab.masking`: Which pixels to hide: SimMIM's random unit masks, square and block-wise masks, MSN's token drop, and AvgDist, the measure of how far a hidden pixel is from the nearest visible one.
- `masklab.msn`: MSN end to end: the projection head, learnable prototypes as implicit classes, the MSN loss and model, and ME-MAX, the regularizer that keeps the prototypes from collapsing (collapse shown, then prevented).
- `masklab.simmim`: SimMIM end to end: a one-layer head that predicts raw pixels, the masked L1 loss, the model, a reconstruction explorer on a checkpoint masklab trained itself, and heavier heads measured against the light one.
- `masklab.sweep`: Grids of pre-training runs: one row per finished run in a table on disk that survives interruptions, named metrics, and figures drawn from the table; the runner behind `masklab sweep` and the masking-ratio lesson.
- `masklab.widgets`: Explorers to play with: the mask explorer (strategy, unit size, ratio, seed), each built on a pure render function that the docs draw as a static grid."""

__version__ = "0.0.1"
