#!/usr/bin/env python3
"""Independent check of testdata/vectors.json with pyca/cryptography.

Run: python3 crypto/testdata/verify_vectors.py (needs `cryptography`).
It recomputes every vector from FORMAT.md's description, not from Go code.
"""
import base64, hashlib, hmac, json, os, unicodedata
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF


def hkdf(key, info, n=32):
    return HKDF(algorithm=hashes.SHA256(), length=n, salt=None, info=info).derive(key)


v = json.load(open(os.path.join(os.path.dirname(__file__), "vectors.json")))
for e in v["envelope_v1"]:
    k, col = bytes.fromhex(e["data_key"]), e["column"].encode()
    sub = hkdf(k, b"phiproxy/v1/column-key\x00" + col)
    assert sub.hex() == e["column_key"]
    hdr = bytes([1]) + e["key_id"].to_bytes(4, "big")
    n = bytes.fromhex(e["nonce"])
    env = hdr + n + AESGCM(sub).encrypt(n, bytes.fromhex(e["plaintext"]), hdr + col)
    assert env.hex() == e["envelope"], e
    assert "phi1:" + base64.b64encode(env).decode().rstrip("=") == e["text"]
NORMALIZERS = {
    "trim": str.strip, "lower": str.lower,
    "digits": lambda t: "".join(c for c in t if c in "0123456789"),
    "nfc": lambda t: unicodedata.normalize("NFC", t),
    "btrim": lambda t: t.strip(" "),
    "ascii_lower": lambda t: "".join(chr(ord(c) + 32) if "A" <= c <= "Z" else c for c in t),
}


def check_index(x, info):
    k = hkdf(bytes.fromhex(x["root_key"]), info)
    assert k.hex() == x["index_key"]
    s = x["value"]
    for n in x["normalize"]:
        s = NORMALIZERS[n](s)
    assert s == x["normalized"], (s, x)
    mac = hmac.new(k, s.encode(), hashlib.sha256).digest()[: x["bits"] // 8]
    assert mac.hex() == x["index"]
    assert base64.b64encode(mac).decode().rstrip("=") == x["text"]
    if "as_is" in x:
        raw = hmac.new(k, x["value"].encode(), hashlib.sha256).digest()[: x["bits"] // 8]
        assert raw.hex() == x["as_is"]


for x in v["blind_index_v1"]:
    check_index(x, b"phiproxy/v1/blind-index\x00" + x["group"].encode())
for x in v["normalized_index_v1"]:
    check_index(x, b"phiproxy/v1/normalized-index\x00" + x["group"].encode() + b"\x00" + ",".join(x["normalize"]).encode())
for l in v["local_wrap_v1"]:
    m = bytes.fromhex(l["master_key"])
    assert "local:" + hkdf(m, b"phiproxy/v1/local-key-id", 8).hex() == l["master_key_id"]
    aad = b"phiproxy/v1/local-wrap"
    for key in sorted(l["context"]):
        kb, vb = key.encode(), l["context"][key].encode()
        aad += len(kb).to_bytes(2, "big") + kb + len(vb).to_bytes(2, "big") + vb
    w = bytes.fromhex(l["wrapped"])
    assert AESGCM(hkdf(m, b"phiproxy/v1/local-wrap")).decrypt(w[:12], w[12:], aad).hex() == l["key"]
print("all vectors verified")
