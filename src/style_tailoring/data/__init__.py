"""Data: image-caption folders (the sources), and the routed stream that turns a strategy's plan into batches."""
