package testutil

import "golang.org/x/sys/unix"

func mount(dir string) error {
	return unix.Mount("tmpfs", dir, "tmpfs", unix.MS_NOSUID|unix.MS_NODEV, "size=256m,mode=0755")
}

func unmount(dir string) error { return unix.Unmount(dir, unix.MNT_DETACH) }
