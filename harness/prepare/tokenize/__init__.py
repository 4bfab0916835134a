"""Tokenised real images for the GAN refinement's real branch: `python -m harness.prepare.tokenize`.

A class-per-folder image tree is listed with labels (`folder.py`), each image is decoded, resized
and centre-cropped the way the teacher's own code prepares ImageNet (`preprocess.py`), encoded by
the teacher's tokenizer (`work.py`), and written chunk by chunk per shard, then merged into the
safetensors file of `tokens` [N, L, G] and `labels` [N] that `teacher.real_tokens` names
(`parts.py`). docs/usage.md, "Real tokens for the GAN", describes the command.
"""
