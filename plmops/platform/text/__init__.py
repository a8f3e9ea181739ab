"""Text processing for corpus ingestion: reading, normalisation, language ID, splitting, dedup, segmentation."""
