"""Model pieces shared by the built-in plugins.

The plugins in ``plugins/`` only register these classes under names with pydantic option
models; the modules here hold the maths so that tests, the profile command and the training
stages import one implementation:

* :mod:`.relations`: label-grouped prototypes and the support-relation matrix (D2M);
* :mod:`.trx`: the temporal-relational cross-transformer head, vectorised over classes;
* :mod:`.baseline`: the teacher "Baseline" mean-distance head;
* :mod:`.backbone` and :mod:`.weights`: timm frame encoders and local weight loading;
* :mod:`.fusion`: MFM and the mean/concat fusion baselines;
* :mod:`.losses`: cross-entropy, temperature KD and DIST terms;
* :mod:`.fewshot`: backbone + head (or head on stored features) with the output contract;
* :mod:`.build`: build the models of an :class:`~mkdcore.config.ExperimentConfig`;
* :mod:`.profile`: parameters, thop-style MACs and FlopCounterMode FLOPs of one episode.
"""
