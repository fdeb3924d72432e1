package scanner

import (
	"strings"
	"testing"
)

// TestFiletypeLOKI checks the values that signature-base's rules test
// (yara/generic_anomalies.yar, yara/yara_mixed_ext_vars.yar) on the
// content LOKI gives them for.
func TestFiletypeLOKI(t *testing.T) {
	tests := []struct{ head, want string }{
		{"MZ\x90\x00\x03\x00", "EXE"},
		{"\x7fELF\x02\x01\x01", "ELF"},
		{"\xcf\xfa\xed\xfe\x07\x00\x00\x01", "MACH-O"},
		{"\xca\xfe\xba\xbe\x00\x00\x00\x02", "MACH-O"},
		{"Function Foo()", "VBS"},
		{"On Error Resume Next", "VBS"},
		{"<?php echo 1;", "PHP"},
		{"<% out.println() %>", "JSP"},
		{"<%@ Page Language", "JSP"}, // LOKI: the shorter "<%" comes first
		{"@echo off\r\n", "BATCH"},
		{"@ECHO OFF\r\n", "BATCH"},
		{"echo hi", "Batch"},
		{"{\\rtf1\\ansi", "RTF"},
		{"MDMP\x93\xa7", "MDMP"},
		{"TVqQAAMAAAAEAAAA", "Base64 EXE"},
		{"%PDF-1.7", "PDF"},
		{"\xff\xd8\xff\xe0\x00\x10JFIF", "JPEG"},
		{"GIF89a", ""}, // signature-base's list has no GIF
		{"Rar!\x1a\x07\x01\x00", "RAR"},
		{"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1", "OLE"},
		{"CWS\x0a", "CWS"}, // LOKI: the later name of a repeated magic
		{"\xff\xfeV\x00e\x00r\x00s\x00i\x00o\x00", "UTF16-Encoded File LE"},
		{"V\x00e\x00r\x00s\x00i\x00o\x00n\x00", "WER"},
		{"#!/bin/sh", "UNIX SCRIPT"},
		{"#! /bin/sh", "Script"},
		{"M", ""},
		{"", ""},
	}
	for _, tt := range tests {
		if got := filetype([]byte(tt.head)); got != tt.want {
			t.Errorf("filetype(%q) = %q, want %q", tt.head, got, tt.want)
		}
	}
}

// TestFileMagics checks the table: no magic is hidden by an earlier one
// (LOKI never reaches those), none is empty, and maxMagic is the longest.
func TestFileMagics(t *testing.T) {
	longest := 0
	for i, m := range fileMagics {
		if m.magic == "" || m.name == "" {
			t.Errorf("fileMagics[%d] = %q: empty", i, m)
		}
		longest = max(longest, len(m.magic))
		for _, e := range fileMagics[:i] {
			if strings.HasPrefix(m.magic, e.magic) {
				t.Errorf("fileMagics[%d] %q (%s) is hidden by %q (%s) before it", i, m.magic, m.name, e.magic, e.name)
			}
		}
		if got := filetype([]byte(m.magic)); ClassOf([]byte(m.magic)) != ClassMachO && got != m.name {
			t.Errorf("filetype(%q) = %q, want %q", m.magic, got, m.name)
		}
	}
	if longest != maxMagic {
		t.Errorf("longest magic: %d bytes, maxMagic = %d", longest, maxMagic)
	}
	if maxMagic > 16 {
		t.Errorf("maxMagic = %d: the scanners pass VarsFor 16 bytes", maxMagic)
	}
}
