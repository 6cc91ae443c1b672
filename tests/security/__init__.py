"""Security, fault and bad-input tier (issue #6): the suite attacks the hooks and the operator.

See ``SECURITY.md`` at the repository root for the threat model and the table threat -> test.
"""
