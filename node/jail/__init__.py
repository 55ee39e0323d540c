"""The jail: static checks on job source, the restricted job API, the sandboxed party process."""
