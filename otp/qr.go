package otp

import (
	"bytes"
	"fmt"
	"image"
	"image/color"
	"image/png"

	"github.com/boombuler/barcode/qr"
)

// QuietZone is the white border around a QR code, in modules (ISO/IEC
// 18004 asks for four). QRPNG draws it, so the code scans on any
// background.
const QuietZone = 4

// QRPNG renders uri as a QR code (error correction level M) in a PNG of
// size×size pixels: black modules of a whole number of pixels each, centred
// in a white square with at least a QuietZone border. It is an error when
// size is too small for one pixel per module.
func QRPNG(uri string, size int) ([]byte, error) {
	code, err := qr.Encode(uri, qr.M, qr.Auto)
	if err != nil {
		return nil, fmt.Errorf("otp: qr code: %w", err)
	}
	n := code.Bounds().Dx()
	scale := size / (n + 2*QuietZone)
	if scale < 1 {
		return nil, fmt.Errorf("otp: qr code: %d pixels cannot hold %d modules and the quiet zone", size, n+2*QuietZone)
	}
	off := (size - n*scale) / 2
	img := image.NewPaletted(image.Rect(0, 0, size, size), color.Palette{color.White, color.Black})
	// Index 0, white, is the background already.
	for y := range n {
		for x := range n {
			if r, _, _, _ := code.At(x, y).RGBA(); r != 0 {
				continue
			}
			for dy := range scale {
				row := img.Pix[(off+y*scale+dy)*img.Stride:]
				for dx := range scale {
					row[off+x*scale+dx] = 1
				}
			}
		}
	}
	var buf bytes.Buffer
	enc := png.Encoder{CompressionLevel: png.BestCompression}
	if err := enc.Encode(&buf, img); err != nil {
		return nil, fmt.Errorf("otp: qr code: %w", err)
	}
	return buf.Bytes(), nil
}
