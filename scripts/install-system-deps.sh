#!/usr/bin/env bash
# Install the Debian packages that the interop, UI, PGP and benchmark tiers need (and gnupg, which
# OpenPGP encryption needs on the workers at run time).
# Idempotent: does nothing when everything is present. Needs root and apt-get;
# without them it only says what is missing (those test tiers then skip locally,
# and fail under CI=true).
set -euo pipefail
need=()
[ -x /usr/sbin/vsftpd ] || need+=(vsftpd)
[ -x /usr/sbin/sshd ] || need+=(openssh-server)
command -v sftp >/dev/null || need+=(openssh-client)
command -v lftp >/dev/null || need+=(lftp)
command -v curl >/dev/null || need+=(curl)
command -v chromium >/dev/null || need+=(chromium)
command -v ss >/dev/null || need+=(iproute2)
# OpenPGP (encrypt_with / sign_with): the provider drives the gpg program (GnuPG 2.2+) at run time.
command -v gpg >/dev/null || need+=(gnupg)
command -v gpgconf >/dev/null || need+=(gpgconf)
[ ${#need[@]} -eq 0 ] && exit 0
if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null; then
  echo "install-system-deps: missing ${need[*]}; run as root on Debian/Ubuntu to install them" >&2
  echo "install-system-deps: the tiers that need them will be skipped" >&2
  exit 0
fi
echo "install-system-deps: installing ${need[*]}"
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
# Debian starts nothing here (no systemd in containers); our tests start their own
# sshd/vsftpd on free loopback ports with their own configs.
