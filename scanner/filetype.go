package scanner

// The values of the external variable filetype are those of LOKI and THOR,
// for whose rules (Florian Roth's signature-base) the variable was made:
// rules there test filetype == "EXE", "ELF", "MACH-O", "PHP", "JSP",
// "BATCH", "RTF", "MDMP", "VBS", filetype contains "Base64", and so on.
//
// LOKI (lib/helpers.py get_file_type) reads signature-base's
// misc/file-type-signatures.txt into a Python dict (a repeated magic keeps
// its first place and takes its last name) and returns the name of the
// first magic, in file order, that the content starts with. fileMagics is
// that list as LOKI sees it (signature-base commit 8a89b3bf5451, April
// 2026), without the entries an earlier, shorter magic hides ("<%@" is
// "JSP", as in LOKI, never "ASP"). Mach-O comes first, as "MACH-O": THOR's
// name, which signature-base's rules use, and which LOKI's list lacks (it
// calls fat binaries "Java Class or DYLIB"). Content that none of them
// starts is "" (LOKI says "UNKNOWN").

// fileMagics are the magics of the filetype values, in the order they are
// tried; the first that content starts with names it.
var fileMagics = [...]struct{ magic, name string }{
	{"\x01\x06\x01\x00", "Job File"},
	{"\x1f\x8b\x08", "GZIP"},
	{"%PDF", "PDF"},
	{"0\x00\x00\x00LfLe", "EVT"},
	{"PK\x03\x04\x14\x00\x06\x00", "Office"},
	{"PKSpX", "PKSFX"},
	{"7z\xbc\xaf'\x1c", "7Zip"},
	{"Function", "VBS"},
	{"BZh", "BZip2"},
	{"_'\xa8\x89", "JAR"},
	{"\xff\xd8\xff", "JPEG"},
	{"PK\x05\x06", "PKZIP"},
	{"Rar!\x1a\x07", "RAR"},
	{"WinZip", "WinZIP"},
	{"regf", "Registry Hive"},
	{"{\x5crt", "RTF"},
	{"ustar", "TAR"},
	{"\xd4\xc3\xb2\xa1", "WINPCAP"},
	{"\xa1\xb2\xc3\xd4", "LIBPCAP"},
	{"\xa1\xb2\xcd4", "LIBPCAP"},
	{"\xffKEYB   ", "SYS Keyboard Driver"},
	{"\xff\xfe<\x00?\x00x\x00m\x00l", "Windows At Job"},
	{"<?php", "PHP"},
	{"\x0dDOC", "DOC"},
	{"# Disk D", "VMDK"},
	{"ElfFil", "EVTX"},
	{"AES", "AESCrypt"},
	{"COWD", "VMDK"},
	{"CWS", "CWS"},
	{"ZWS", "ZWS"},
	{"FWS", "FWS (Flash)"},
	{"FILE", "NTFS MFT"},
	{"JARCS\x00", "JARCS"},
	{"KDM", "VMDK"},
	{"L\x00\x00\x00\x01\x14\x02\x00", "LNK"},
	{"MSCF", "CAB"},
	{"PK\x03\x04", "ZIP"},
	{"<?xml", "XML"},
	{"conectix", "VHD"},
	{"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1", "OLE"},
	{"@ech", "BATCH"},
	{"@ECH", "BATCH"},
	{"\xff\xfe\x90\x02\x01\x00", "Trace Log File"},
	{"#!/", "UNIX SCRIPT"},
	{"MDMP", "MDMP"},
	{"\xff\xfe<\x00%\x00", "JSP"},
	{"\xfe\xff\x00<\x00%", "JSP"},
	{"0:00:00", "Log Relative"},
	{"\x7fE", "ELF"},
	{"#!", "Script"},
	{"\x1f\x9d", "TARZ"},
	{"\x1f\xa0", "TARZ"},
	{"<%", "JSP"},
	{"MZ", "EXE"},
	{"\xff\xfe", "UTF16-Encoded File LE"},
	{"\xfe\xff", "UTF16-Encoded File BE"},
	{"\xca\xfe", "Java Class or DYLIB"},
	{"[00000000:", "MimiLSA Log"},
	{"echo", "Batch"},
	{"[Int", "Internet Shortcut"},
	{"V\x00e\x00r\x00s\x00i\x00o\x00n", "WER"},
	{"AT&TFORM", "Gitlab EXIF"},
	{"<body>", "Web"},
	{"On Error Resume", "VBS"},
	{"<html", "HTML"},
	{"<HTML", "HTML"},
	{"-----BEGIN", "Certificate PEM"},
	{"Salted__", "OpenSSL Salted Format"},
	{"TV", "Base64 EXE"},
}

// maxMagic is the length of the longest magic in fileMagics: VarsFor needs
// no more of the content's head.
const maxMagic = 15

// filetype names the format of content starting with head (see VarsFor).
func filetype(head []byte) string {
	if ClassOf(head) == ClassMachO {
		// Fat headers share their magic with Java class files; there
		// the next word is a class file version (45 and up), not a
		// small architecture count (see classPatterns).
		return "MACH-O"
	}
	for _, m := range fileMagics {
		if len(head) >= len(m.magic) && string(head[:len(m.magic)]) == m.magic {
			return m.name
		}
	}
	return ""
}
