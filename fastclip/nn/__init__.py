"""torch modules over fastclip's ops: the fused contrastive losses with open_clip's ClipLoss / SigLipLoss interface."""

from fastclip.nn.loss import FusedClipLoss, FusedSigLipLoss

__all__ = ["FusedClipLoss", "FusedSigLipLoss"]
