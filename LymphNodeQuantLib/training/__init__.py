"""Offline training of the models LymphNodeQuant ships (``lnq train``, ``lnq export``).

Modules, one job each: :mod:`.config` (settings), :mod:`.dataset` (finding cases in LNQ2023 or
nnU-Net raw layout), :mod:`.cache` (preprocessing once, fingerprinted), :mod:`.strategies`
(targets for the unlabelled voxels), :mod:`.sampling` and :mod:`.augmentation` (patches),
:mod:`.losses`, :mod:`.dbdmp` (dual-branch pseudo-label method), :mod:`.trainer` (the loop,
checkpoints, validation), :mod:`.distributed` (torchrun/DDP), :mod:`.export` (model folders),
:mod:`.plots`, :mod:`.totalsegmentator`, :mod:`.phantom_dataset`.
Nothing here is imported by inference; torch is only needed by the modules that train.
"""
