# The "runtime": a stand-in Python installed under /opt/python, exported as an artifact.
FROM kiln/busybox:1-s390x
COPY python.sh /opt/python/bin/python
RUN chmod 755 /opt/python/bin/python \
 && mkdir -p /opt/python/lib/python3.12 \
 && echo "kiln demo runtime 3.12.0 for $(uname -m)" > /opt/python/lib/python3.12/BUILD-INFO \
 && /opt/python/bin/python --version
