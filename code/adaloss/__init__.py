"""adaloss: anytime neural networks trained with AdaLoss (Hu et al., AAAI 2019, arXiv 1708.06832)."""
