#!/usr/bin/env python3
"""Opens a JWE of cvm-attest's KBS endpoint with jwcrypto, an independent JOSE implementation.

  jwe_open.py keygen PRIVATE.json   -> prints the public JWK (EC P-256, alg ECDH-ES+A256KW), keeps the key
  jwe_open.py open PRIVATE.json JWE.json -> prints the plaintext

Exit 3 with a line starting "skip:" when jwcrypto is not installed (.ci/run installs it with pip).
"""
import json
import sys

try:
    from jwcrypto import jwe, jwk
except ImportError:
    print("skip: jwcrypto is not installed (python3 -m pip install jwcrypto)")
    sys.exit(3)

if sys.argv[1] == "keygen":
    key = jwk.JWK.generate(kty="EC", crv="P-256")
    with open(sys.argv[2], "w") as f:
        f.write(key.export_private())
    public = json.loads(key.export_public())
    public["alg"] = "ECDH-ES+A256KW"
    print(json.dumps({k: public[k] for k in ["kty", "crv", "alg", "x", "y"]}))
elif sys.argv[1] == "open":
    with open(sys.argv[2]) as f:
        key = jwk.JWK.from_json(f.read())
    token = jwe.JWE()
    with open(sys.argv[3]) as f:
        token.deserialize(f.read(), key=key)
    sys.stdout.buffer.write(token.payload)
else:
    sys.exit("usage: jwe_open.py keygen PRIVATE.json | open PRIVATE.json JWE.json")
