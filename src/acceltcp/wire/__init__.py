"""Wire codecs: Ethernet, ARP, IPv4, TCP (+options), Internet checksums.

Stateless. Parsers validate once and raise `errors.WireError(reason)`; builders
return `bytes`. Contracts: docs/internals.md, section "wire/".
"""
