"""A test certificate authority for the TLS tests, made at test time with the `openssl` command.

TestCA(directory) writes a CA key and certificate. Its issue() signs a server certificate for
127.0.0.1 and localhost, and its context() returns a Python ssl context that trusts only this
CA. Keys are EC P-256 unless a test asks for RSA, so making them takes milliseconds. Only the
standard library is used.
"""

import hashlib
import ssl
import subprocess
from pathlib import Path

OPENSSL_TIMEOUT = 30.0

SERVER_EXTENSIONS = """\
basicConstraints = critical, CA:FALSE
keyUsage = critical, digitalSignature
extendedKeyUsage = serverAuth
subjectAltName = {names}
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid, issuer
"""


def openssl(*args, cwd=None):
    """Run `openssl ARGS` and return its stdout; fail with its stderr when it exits non-zero."""
    proc = subprocess.run(["openssl", *args], cwd=cwd, stdin=subprocess.DEVNULL,
                          capture_output=True, text=True, timeout=OPENSSL_TIMEOUT)
    assert proc.returncode == 0, f"openssl {' '.join(args)} failed: {proc.stderr}"
    return proc.stdout


def new_key(path, algorithm="EC"):
    """Write a new private key: EC P-256, or RSA 2048 with algorithm="RSA"."""
    option = "rsa_keygen_bits:2048" if algorithm == "RSA" else "ec_paramgen_curve:P-256"
    openssl("genpkey", "-algorithm", algorithm, "-pkeyopt", option, "-out", str(path))


class TestCA:
    """A CA of its own in directory; certificates it issues are trusted by context() only."""

    __test__ = False  # not a pytest test class

    def __init__(self, directory, name="inferq test CA"):
        self.dir = Path(directory)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.key = self.dir / "ca.key"
        self.cert = self.dir / "ca.pem"
        self.next_serial = 1000
        new_key(self.key)
        openssl("req", "-x509", "-new", "-key", str(self.key), "-out", str(self.cert),
                "-days", "2", "-subj", f"/CN={name}",
                "-addext", "basicConstraints=critical,CA:TRUE",
                "-addext", "keyUsage=critical,keyCertSign,cRLSign")

    def issue(self, name, key=None, algorithm="EC", names="IP:127.0.0.1, DNS:localhost"):
        """Sign a server certificate for 127.0.0.1 and localhost; return (cert path, key path).

        Each call gets a new serial. key reuses an existing key file instead of a new one;
        algorithm is the new key's ("EC" or "RSA"); names is the subjectAltName list.
        """
        self.next_serial += 1
        key_path = Path(key) if key else self.dir / f"{name}.key"
        cert_path = self.dir / f"{name}.pem"
        csr_path = self.dir / f"{name}.csr"
        ext_path = self.dir / f"{name}.ext"
        if key is None:
            new_key(key_path, algorithm)
        ext_path.write_text(SERVER_EXTENSIONS.format(names=names))
        openssl("req", "-new", "-key", str(key_path), "-out", str(csr_path), "-subj",
                "/CN=localhost")
        openssl("x509", "-req", "-in", str(csr_path), "-CA", str(self.cert), "-CAkey",
                str(self.key), "-set_serial", str(self.next_serial), "-days", "2", "-out",
                str(cert_path), "-extfile", str(ext_path))
        return cert_path, key_path

    def context(self):
        """Return a client ssl context that trusts this CA only and checks the host name."""
        ctx = ssl.create_default_context(cafile=str(self.cert))
        ctx.minimum_version = ssl.TLSVersion.TLSv1_2
        return ctx


def cert_fingerprint(pem_path):
    """Return the SHA-256 fingerprint (lowercase hex) of the DER form of a PEM certificate."""
    der = ssl.PEM_cert_to_DER_cert(Path(pem_path).read_text())
    return hashlib.sha256(der).hexdigest()
