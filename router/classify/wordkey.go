// The first-word keys Needed decides on (classify.go).

package classify

// wordKey packs the word b starts with, in lower case, into a uint64 (its
// last byte lowest); 0 when b does not start with a word or the word is
// longer than 8 bytes. Words are those of nextWord.
func wordKey(b []byte) uint64 {
	var k uint64
	for i, c := range b {
		l := identLower[c]
		if l == 0 {
			break
		}
		if i == 8 {
			return 0
		}
		k = k<<8 | uint64(l)
	}
	return k
}

// First words Needed tells apart, as constants: a switch on constants is
// a few comparisons (a binary search), one on variables a comparison per
// case, in order.
const (
	keySet      = uint64('s')<<16 | uint64('e')<<8 | uint64('t')
	keyReset    = uint64('r')<<32 | uint64('e')<<24 | uint64('s')<<16 | uint64('e')<<8 | uint64('t')
	keyDiscard  = uint64('d')<<48 | uint64('i')<<40 | uint64('s')<<32 | uint64('c')<<24 | uint64('a')<<16 | uint64('r')<<8 | uint64('d')
	keyCreate   = uint64('c')<<40 | uint64('r')<<32 | uint64('e')<<24 | uint64('a')<<16 | uint64('t')<<8 | uint64('e')
	keyDeclare  = uint64('d')<<48 | uint64('e')<<40 | uint64('c')<<32 | uint64('l')<<24 | uint64('a')<<16 | uint64('r')<<8 | uint64('e')
	keyPrepare  = uint64('p')<<48 | uint64('r')<<40 | uint64('e')<<32 | uint64('p')<<24 | uint64('a')<<16 | uint64('r')<<8 | uint64('e')
	keyListen   = uint64('l')<<40 | uint64('i')<<32 | uint64('s')<<24 | uint64('t')<<16 | uint64('e')<<8 | uint64('n')
	keyUnlisten = uint64('u')<<56 | uint64('n')<<48 | uint64('l')<<40 | uint64('i')<<32 | uint64('s')<<24 | uint64('t')<<16 | uint64('e')<<8 | uint64('n')
	keyLoad     = uint64('l')<<24 | uint64('o')<<16 | uint64('a')<<8 | uint64('d')
	keyExecute  = uint64('e')<<48 | uint64('x')<<40 | uint64('e')<<32 | uint64('c')<<24 | uint64('u')<<16 | uint64('t')<<8 | uint64('e')
	keyExplain  = uint64('e')<<48 | uint64('x')<<40 | uint64('p')<<32 | uint64('l')<<24 | uint64('a')<<16 | uint64('i')<<8 | uint64('n')
)
