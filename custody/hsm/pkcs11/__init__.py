"""custody.hsm.pkcs11."""
