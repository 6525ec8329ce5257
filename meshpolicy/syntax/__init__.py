"""Source text to syntax tree: tokenizer, grammar and the error-recovering parser."""
