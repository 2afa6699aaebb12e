#!/bin/sh
# build.sh CACHE_DIR: prepares the kernel rig's cache from Debian packages only
# (apt-get download, dpkg-deb -x): Debian's arm64 kernel and modules, busybox,
# and gpio-sim built out of tree, because Debian's arm64 kernel is built
# without CONFIG_GPIO_SIM. Writes CACHE_DIR/ready last; the Go test runs this
# when that file is missing.
set -eu
W=$1
mkdir -p "$W/debs"
cd "$W/debs"

# The kernel linux-image-arm64 depends on today, and its headers.
img=$(apt-cache depends linux-image-arm64:arm64 | sed -n 's/.*Depends: \(linux-image-[0-9][^ :]*\).*/\1/p' | head -1)
[ -n "$img" ] || { echo "build.sh: apt-cache knows no linux-image-arm64:arm64 (dpkg --add-architecture arm64 && apt-get update)" >&2; exit 1; }
krel=${img#linux-image-}
kver=${krel%-arm64}
ser=$(echo "$kver" | sed 's/^\([0-9]*\.[0-9]*\).*/\1/')
for p in "$img:arm64" "linux-headers-$krel:arm64" "linux-headers-$kver-common" "linux-source-$ser" busybox-static:arm64; do
	n=${p%%:*}
	ls "${n}"_*.deb >/dev/null 2>&1 || apt-get download -qq "$p"
done

cd "$W"
rm -rf kern hdr src mod bb
dpkg-deb -x debs/"${img}"_*.deb kern
dpkg-deb -x debs/linux-headers-"${krel}"_*.deb hdr
dpkg-deb -x debs/linux-headers-"${kver}"-common_*.deb hdr
# The headers point at /usr/src/…-common and at linux-kbuild's scripts: aim them at this tree.
sed -i "s|^include /usr/src/|include $W/hdr/usr/src/|" "hdr/usr/src/linux-headers-$krel/Makefile"
mkdir -p hdr/usr/lib && ln -sfn "/usr/lib/linux-kbuild-$ser" "hdr/usr/lib/linux-kbuild-$ser"
dpkg-deb -x debs/busybox-static_*.deb bb

dpkg-deb -x debs/linux-source-"$ser"_*.deb src
mkdir -p mod
tar -xJf "src/usr/src/linux-source-$ser.tar.xz" -C mod --strip-components=1 --wildcards \
	'*/drivers/gpio/gpio-sim.c' '*/drivers/gpio/gpiolib.h' '*/kernel/irq/irq_sim.c'
mv mod/drivers/gpio/gpio-sim.c mod/drivers/gpio/gpiolib.h mod/kernel/irq/irq_sim.c mod/
rm -rf mod/drivers mod/kernel src
# irq_to_desc is not exported to modules: go through the exported helper instead.
sed -i 's|handle_simple_irq(irq_to_desc(irqnum));|generic_handle_irq_safe(irqnum);|' mod/irq_sim.c
grep -q generic_handle_irq_safe mod/irq_sim.c || { echo "build.sh: the irq_sim.c change did not apply" >&2; exit 1; }
printf 'obj-m := gpio-sim-oot.o\ngpio-sim-oot-y := gpio-sim.o irq_sim.o\n' > mod/Makefile
make -s -C "$W/hdr/usr/src/linux-headers-$krel" M="$W/mod" ARCH=arm64 CROSS_COMPILE=aarch64-linux-gnu- \
	DEB_BUILD_ARCH=amd64 DEB_HOST_ARCH=arm64 DEB_HOST_GNU_TYPE=aarch64-linux-gnu modules
rm -rf hdr

# Keep only what the initramfs takes: the kernel, busybox and the modules
# /init loads (configfs, virtio networking, gpio-sim).
rm -rf modules && mkdir modules
K=kern/lib/modules/$krel/kernel
cp $K/fs/configfs/configfs.ko $K/net/core/failover.ko $K/drivers/net/net_failover.ko \
	$K/drivers/virtio/virtio_pci_legacy_dev.ko $K/drivers/virtio/virtio_pci_modern_dev.ko \
	$K/drivers/virtio/virtio_pci.ko $K/drivers/net/virtio_net.ko mod/gpio-sim-oot.ko modules/
cp "kern/boot/vmlinuz-$krel" vmlinuz
cp bb/bin/busybox busybox
rm -rf kern bb mod debs
echo "$krel" > ready
