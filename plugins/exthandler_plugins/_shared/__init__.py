"""Code the built-in handlers share: downloads (`download`), running a script in its own
process group (`process`) and keeping secrets out of messages (`redact`)."""
