"""Datasets (CamVid, Cityscapes), joint image+label transforms, download helpers."""
