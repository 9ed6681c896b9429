"""One command, from its bytes to DMS: parsing, pure validation, content, and the upload/delete handlers."""
