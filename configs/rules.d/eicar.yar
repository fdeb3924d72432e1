/*
 * fanguard's own rule for the EICAR anti-malware test file: a harmless
 * 68-byte file that every scanner detects, used to check that on-access
 * scanning works ("fanguard scan", or opening a copy on a protected file
 * system).
 *
 * The standard file is the string below at offset 0, optionally followed by
 * white space, 128 bytes at most. In a YARA text string a backslash is
 * written as \\ and must stay escaped.
 *
 * No "action" metadata: a detection follows quarantine.action of the
 * configuration, so the test file shows what a real detection would do.
 */

rule EICAR_Test_File : test
{
    meta:
        description = "EICAR anti-malware test file (harmless test string)"
        reference = "https://www.eicar.org/download-anti-malware-testfile/"
        severity = "low"

    strings:
        $eicar = "X5O!P%@AP[4\\PZX54(P^)7CC)7}$EICAR-STANDARD-ANTIVIRUS-TEST-FILE!$H+H*"

    condition:
        $eicar at 0 and filesize <= 128
}
