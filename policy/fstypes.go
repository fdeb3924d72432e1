package policy

import (
	"slices"
	"strings"
)

// LocalFSTypes returns the filesystem types that protect.fs_types accepts:
// local disk and memory filesystems, whose opens fanguard can hold without
// depending on another machine or on a user-space server. Each call returns
// a fresh slice.
func LocalFSTypes() []string {
	return []string{
		"ext2", "ext3", "ext4", "xfs", "btrfs", "tmpfs", "vfat", "exfat",
		"f2fs", "iso9660", "jfs", "ntfs3", "udf", "msdos", "squashfs", "erofs",
		"ramfs", "hfsplus", "nilfs2", "bcachefs",
	}
}

// defaultFSTypes returns the filesystem types protected by default.
func defaultFSTypes() []string {
	return []string{
		"ext2", "ext3", "ext4", "xfs", "btrfs", "tmpfs", "vfat", "exfat",
		"f2fs", "iso9660",
	}
}

// whyNotFSType explains why t cannot be protected, or returns "" when it can.
func whyNotFSType(t string) string {
	if slices.Contains(LocalFSTypes(), t) {
		return ""
	}
	switch t {
	case "nfs", "nfs4", "cifs", "smb3", "smbfs", "9p", "ceph", "glusterfs",
		"afs", "ncpfs", "coda", "lustre", "gfs2", "ocfs2", "orangefs",
		"virtiofs", "davfs", "beegfs", "gpfs":
		return "is a network filesystem: a server that hangs would freeze every open on it"
	case "fuse", "fuseblk":
		return "is a FUSE filesystem: a FUSE server that hangs would freeze every open on it"
	case "overlay", "overlayfs":
		return "is an overlay: its files live on the filesystems below it, protect those instead"
	case "proc", "sysfs", "cgroup", "cgroup2", "devpts", "devtmpfs", "debugfs",
		"tracefs", "bpf", "securityfs", "autofs", "mqueue", "hugetlbfs",
		"pstore", "efivarfs", "configfs", "fusectl", "binfmt_misc",
		"rpc_pipefs", "nsfs", "pipefs", "sockfs", "selinuxfs", "nfsd",
		"cpuset", "rootfs":
		return "is a pseudo filesystem: it holds no files to scan"
	}
	if strings.HasPrefix(t, "fuse.") {
		return "is a FUSE filesystem: a FUSE server that hangs would freeze every open on it"
	}
	return "is not a supported filesystem type"
}
