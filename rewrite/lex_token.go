package rewrite

import "fmt"

// TokenKind is the class of a token, mapping onto the server's token codes
// (gram.y) where tokens differ in boundaries or meaning. Keywords are
// TokenIdent: the scanner ends them exactly where it ends identifiers.
type TokenKind uint8

// Token kinds.
const (
	TokenInvalid       TokenKind = iota
	TokenIdent                   // identifier or keyword (IDENT, keywords); "N" before a string (NCHAR)
	TokenQuotedIdent             // "…" (IDENT)
	TokenUnicodeIdent            // U&"…" (UIDENT)
	TokenString                  // '…', E'…', $tag$…$tag$, with continuations (SCONST)
	TokenUnicodeString           // U&'…' (USCONST)
	TokenBitString               // B'…' (BCONST)
	TokenHexString               // X'…' (XCONST)
	TokenInteger                 // integer fitting int32 (ICONST)
	TokenFloat                   // other numbers (FCONST)
	TokenParam                   // $n (PARAM)
	TokenOp                      // operator (Op)
	TokenTypecast                // ::
	TokenDotDot                  // ..
	TokenColonEquals             // :=
	TokenEqualsGreater           // =>
	TokenLessEquals              // <=
	TokenGreaterEquals           // >=
	TokenNotEquals               // <> or !=
	TokenChar                    // one byte returned as itself: {self} characters and {other}
	TokenLineComment             // -- to the end of the line
	TokenBlockComment            // /* … */, nested
)

var tokenKindNames = [...]string{"Invalid", "Ident", "QuotedIdent", "UnicodeIdent", "String", "UnicodeString", "BitString", "HexString",
	"Integer", "Float", "Param", "Op", "Typecast", "DotDot", "ColonEquals", "EqualsGreater", "LessEquals", "GreaterEquals",
	"NotEquals", "Char", "LineComment", "BlockComment"}

func (k TokenKind) String() string {
	if int(k) < len(tokenKindNames) {
		return tokenKindNames[k]
	}
	return fmt.Sprintf("TokenKind(%d)", k)
}

// Token is one token of a text: its kind and byte offsets.
type Token struct {
	Kind       TokenKind
	form       strForm // string constants: the scan.l state of their body
	flags      tokFlags
	esc        byte // U& constants: their escape character (UESCAPE)
	Start, End int  // src[Start:End] is the token
}

// strForm is the scan.l state a string constant's body is read in.
type strForm uint8

const (
	formNone     strForm = iota
	formStandard         // <xq>: '' is a quote, nothing else is special
	formEscape           // <xe>: E'…', or '…' with standard_conforming_strings off
	formUnicode          // <xus>: U&'…', escapes decoded after UESCAPE
	formBits             // <xb>, <xh>: no doubled quotes
	formDollar           // <xdolq>: nothing is special
)

type tokFlags uint8

const (
	tokContinued    tokFlags = 1 << iota // the constant continues after a quote, whitespace with a newline, and a quote
	tokCommentGap                        // such whitespace holds a -- comment (pg_query's Scan splits it there)
	tokHighEscape                        // an octal or hex escape made a byte ≥ 0x80 (the server then verifies the encoding)
	tokValueUnknown                      // the value is not in the client's encoding without a conversion table
	tokDoubledQuote                      // a '…' constant in <xq> holds '' (its value is not its body as written)
)

// Continued reports whether the string constant was written as several
// quoted parts separated by whitespace holding a newline ('a'⏎'b').
func (t Token) Continued() bool { return t.flags&tokContinued != 0 }

// Standard reports whether a TokenString is a standard '…' constant (not
// E'…' nor dollar-quoted): the form whose backslashes mean something else
// when standard_conforming_strings is off.
func (t Token) Standard() bool { return t.Kind == TokenString && t.form == formStandard }

// LexError is a text the server refuses while reading it, before running
// any of it. Message is the server's, without the text it quotes.
type LexError struct {
	Code    string // the SQLSTATE the server reports
	Message string
	Pos     int // byte offset of the construct at fault
}

func (e *LexError) Error() string {
	return fmt.Sprintf("%s at byte %d (SQLSTATE %s)", e.Message, e.Pos, e.Code)
}

func syntaxErr(msg string, pos int) *LexError {
	return &LexError{Code: CodeSyntaxError, Message: msg, Pos: pos}
}
