"""RFC 9110 / RFC 9112 grammar as named regex pieces, each under the ABNF it encodes, so a
reviewer checks it line by line. Used by the parser (requests) and by the head writer (header
names and values of responses)."""

from __future__ import annotations

import re

# --------------------------------------------------------------------------------------------
# Grammar (RFC 9110 section 5, RFC 9112 sections 3 and 5)
#
# Linear time: neighbouring pieces are separated by characters that the classes on either side
# exclude (a token stops at ':' or SP, a field value's words at SP/HTAB, a line at CR), so a
# text matches in one way only, and every quantifier is possessive (``*+``, ``++``, ``?+``): a
# failed match gives up without backtracking into a run, and no backtracking state is kept per
# repetition (with plain ``*`` that state grew with the head and the match slowed 30-fold from
# 100 KB to 1 MB of fields; it is 10-fold now).

#  OWS            = *( SP / HTAB )
OWS = r"[ \t]*+"
#  tchar          = "!" / "#" / "$" / "%" / "&" / "'" / "*" / "+" / "-" / "." / "^" / "_"
#                   / "`" / "|" / "~" / DIGIT / ALPHA
#  token          = 1*tchar
token = r"[-!#$%&'*+.^_`|~0-9A-Za-z]++"
#  field-name     = token
field_name = token
#  field-vchar    = VCHAR / obs-text          ; VCHAR = %x21-7E, obs-text = %x80-FF
field_vchar = r"[\x21-\x7e\x80-\xff]"
#  field-content  = field-vchar [ 1*( SP / HTAB / field-vchar ) field-vchar ]
field_content = rf"{field_vchar}++(?:[ \t]++{field_vchar}++)*+"
#  field-value    = *field-content
field_value = rf"(?:{field_content})?+"
#  field-line     = field-name ":" OWS field-value OWS     (each ended by CRLF)
field_line = rf"{field_name}:{OWS}{field_value}{OWS}\r\n"
#  method         = token
method = token
#  request-target = origin-form / absolute-form / authority-form / asterisk-form
#                   (all of them visible characters only)
request_target = r"[\x21-\x7e]++"
#  HTTP-version   = HTTP-name "/" DIGIT "." DIGIT
http_version = r"HTTP/[0-9]\.[0-9]"
#  request-line   = method SP request-target SP HTTP-version
request_line = rf"({method}) ({request_target}) ({http_version})"
#  chunk          = chunk-size [ chunk-ext ] CRLF chunk-data CRLF
#  chunk-size     = 1*HEXDIG        (we cap it at 16 digits)
#  chunk-ext      = *( BWS ";" BWS chunk-ext-name [ BWS "=" BWS chunk-ext-val ] )  (ignored)
chunk_header = r"([0-9A-Fa-f]{1,16}+)[ \t]*+(?:;[\x09\x20-\x7e\x80-\xff]*+)?+"

_REQUEST_LINE = re.compile(request_line)
#  request head = request-line CRLF *( field-line CRLF )   (the final CRLF is cut off before)
_HEAD = re.compile(rf"{request_line}\r\n((?:{field_line})*+)")
_FIELD_LINE = re.compile(field_line)
_TOKEN = re.compile(token)
_CHUNK_HEADER = re.compile(chunk_header)
_DIGITS = re.compile(r"[0-9]{1,18}")
_FIELD_VALUE = re.compile(rf"{field_value}")
_METHOD_PREFIX = re.compile(rb"[-!#$%&'*+.^_`|~0-9A-Za-z]{0,64}")
