"""Deployment forms of a trained few-shot model: the frame encoder and the few-shot
head as separate graphs (:mod:`.modules`), written by ``mkd export``
(:mod:`.writer`) and run without mkd's training code (:mod:`.runtime`)."""
