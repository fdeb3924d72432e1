// Package feeds brings rule feeds into fanguard: archives of YARA rules at
// an HTTPS address (.zip, .tar.gz, .tar.xz) or directories on the local file
// system (for air-gapped sites).
//
// Fetch downloads a feed over verified TLS (the system's roots plus an
// optional CA file, TLS 1.2 or later, no redirect from https to http) into a
// temporary file, with a conditional request (ETag, Last-Modified), a time
// limit and a size limit enforced on the bytes read. VerifySHA256 and
// VerifyMinisign check what was downloaded against a pinned digest and a
// minisign signature. Unpack extracts an archive, and CopyTree copies a
// local directory, into a new directory, keeping only the rule files the
// feed's filters select, for the gate that checks them before they go live.
//
// Update runs a feed through all of it and then through the gate: the new
// version must compile together with the rules in force; it is scanned
// against a sample of this host's trusted files (SampleTrusted: files of
// installed packages whose content matches dpkg's md5sums), and a rule that
// matches one is held back (HoldBack rewrites its file without it and the
// rules that use it); and the mean scan cost per trusted file must stay
// under a bound. Only then is the feed's link in the feeds directory
// (DIR/NAME -> .store/NAME/VERSION) swapped in one rename; the previous
// version stays for Rollback, and each feed's State (versions, validators,
// last check) is kept beside its versions. A lock keeps two updates from
// running at once.
//
// An archive is untrusted input, and this package must never:
//   - write outside the destination it was given: names that are absolute,
//     hold a ".." element, a backslash or a NUL, or would escape once cleaned
//     refuse the whole archive, and files are created with O_EXCL|O_NOFOLLOW
//     through an os.Root opened on the destination;
//   - follow or create a link from an archive: symbolic links, hard links,
//     device files, FIFOs and sockets refuse the whole archive, and so do
//     they in a local feed directory, which is walked without following links;
//   - trust a size an archive or a server declares: sizes declared too large
//     refuse early, and every limit (entries, bytes per file, bytes in all,
//     bytes downloaded) is enforced on the bytes actually read.
//
// On any error nothing is left behind: no temporary download, no partly
// filled destination; and a version that fails anywhere leaves the
// version in force, its link and the rules in force untouched.
package feeds
