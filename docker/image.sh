#!/usr/bin/env bash
# The node image's recipe: builds a Debian 12 root file system in DIR with Slurm, munge,
# Open MPI and PMIx, ready for `tar -C DIR -c . | docker import - TAG`.
#
#   image.sh DIR
#
# Nothing can be pulled on the machines this runs on, so the image is bootstrapped from the
# host's own Debian mirror. docker/cluster.sh tags the image with a hash of this file: change
# it and the next `cluster.sh up` builds a new image.
set -euo pipefail

root=${1:?usage: image.sh DIR}
[[ ! -e $root || -z $(ls -A "$root") ]] || { echo "image.sh: $root is not empty" >&2; exit 1; }
command -v debootstrap >/dev/null || { echo "image.sh: debootstrap is not installed" >&2; exit 1; }

# The same packages as the host the binaries were built on: they link Open MPI 4.1 dynamically,
# and Slurm's mpi/pmix plugin dlopens the unversioned libpmix.so that only libpmix-dev ships.
packages=(openmpi-bin libpmix-dev slurm-wlm munge iproute2 procps)

sources=/etc/apt/sources.list.d/debian.sources
mirror=$(awk '/^URIs:/ { print $2; exit }' "$sources")
[[ -n $mirror ]] || { echo "image.sh: no mirror in $sources" >&2; exit 1; }

debootstrap --variant=minbase bookworm "$root" "$mirror" >"$root.debootstrap.log" 2>&1 || {
  tail -n 20 "$root.debootstrap.log" >&2
  exit 1
}
cp "$sources" "$root/etc/apt/sources.list.d/debian.sources"
rm -f "$root/etc/apt/sources.list"
cp /etc/resolv.conf "$root/etc/resolv.conf"
# No service starts inside the build chroot; the container's entry script starts the daemons.
printf '#!/bin/sh\nexit 101\n' >"$root/usr/sbin/policy-rc.d"
chmod 755 "$root/usr/sbin/policy-rc.d"
{
  chroot "$root" apt-get update -q
  chroot "$root" env DEBIAN_FRONTEND=noninteractive \
    apt-get install -y -q --no-install-recommends "${packages[@]}"
} >"$root.apt.log" 2>&1 || {
  tail -n 20 "$root.apt.log" >&2
  exit 1
}
chroot "$root" apt-get clean
rm -rf "$root"/var/lib/apt/lists/* "$root/etc/resolv.conf"

# One munge key for every container of the image: that is all munge needs to trust them.
# (A test cluster's key, made at build time; never printed.)
if [[ ! -s $root/etc/munge/munge.key ]]; then
  dd if=/dev/urandom of="$root/etc/munge/munge.key" bs=1024 count=1 status=none
fi
chroot "$root" chown munge:munge /etc/munge/munge.key
chmod 400 "$root/etc/munge/munge.key"
mkdir -p "$root/shared" "$root/opt/rank-launch/bin" "$root/var/spool/slurmctld" "$root/var/spool/slurmd"
