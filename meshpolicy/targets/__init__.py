"""One module (or package) per compile target: the lowering from the model."""
