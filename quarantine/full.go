package quarantine

import (
	"errors"
	"syscall"

	"github.com/mattn/go-sqlite3"
)

// fullError marks an error as ErrFull while keeping its message and chain.
type fullError struct{ err error }

func (e *fullError) Error() string        { return e.err.Error() }
func (e *fullError) Unwrap() error        { return e.err }
func (e *fullError) Is(target error) bool { return target == ErrFull }

// full returns err marked as ErrFull when it says that the disk (or the
// quota) is full: SQLite's SQLITE_FULL (the database or its WAL cannot
// grow), or ENOSPC or EDQUOT from the system, through SQLite or directly.
// Other errors, and nil, are returned as they are.
func full(err error) error {
	if err == nil || errors.Is(err, ErrFull) || !isFull(err) {
		return err
	}
	return &fullError{err}
}

func isFull(err error) bool {
	var se sqlite3.Error
	if errors.As(err, &se) {
		return se.Code == sqlite3.ErrFull || se.SystemErrno == syscall.ENOSPC || se.SystemErrno == syscall.EDQUOT
	}
	return errors.Is(err, syscall.ENOSPC) || errors.Is(err, syscall.EDQUOT)
}
