"""Local file work: atomic writes, the rejected folder, ID files, results, inbox scans."""
