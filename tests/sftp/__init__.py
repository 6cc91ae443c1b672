"""SFTP tests: the asyncssh-based client, host-key trust, the hook, against real servers on loopback."""
