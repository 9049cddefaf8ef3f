"""Pretrained musicnn 0.1.0 (MTT_musicnn, MSD_musicnn) in torch, without TensorFlow.

* :mod:`.fetch` -- install-time download of the musicnn wheel and extraction of the checkpoints.
* :mod:`.checkpoint` -- a stdlib + numpy reader for TF V2 checkpoints.
* :mod:`.preprocess` -- musicnn's log-mel patches (librosa and torch front ends).
* :mod:`.model` -- the network in torch.
* :mod:`.backend` -- :class:`MusicnnBackend`, clip embeddings for the feature pipeline.
"""
