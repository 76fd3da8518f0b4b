/** Stable error codes. Code that catches a MixprecError switches on `code`, never on the message. */
export type ErrorCode =
  | 'E_ARG'       // a bad argument value or type
  | 'E_SHAPE'     // wrong shape, length, or non-integer / negative dims
  | 'E_DTYPE'     // unknown or unsupported dtype
  | 'E_DEVICE'    // unknown device, or tensors on different devices
  | 'E_DISPOSED'  // a tensor used after dispose()
  | 'E_NO_CUDA'   // CUDA asked for but not compiled in or not available (the message says why)
  | 'E_NO_ADDON'  // the native addon is not built (the message names the command to run)
  | 'E_OOM'       // out of host or device memory
  | 'E_CUDA'      // a CUDA runtime error
  | 'E_STATE'     // an API used out of order (e.g. GradScaler: unscale twice before update), or a malformed state dict
  | 'E_DATA'      // a malformed data file or array (IDX magic / dims / length, labels out of range)
  | 'E_CHECKPOINT'// a checkpoint that is truncated, corrupted, of another version, or of another model
  | 'E_IO'        // a file could not be read or written (the message has the OS error)
  | 'E_DIST'      // distributed training: a rank exited or stopped answering (the message names it), the rendezvous failed, or a collective timed out
  | 'E_INTERNAL'; // a native library failed in a way mixprec does not classify (a bug: please report it)

export class MixprecError extends Error {
  readonly code: ErrorCode;
  constructor(code: ErrorCode, message: string) {
    super(message);
    this.name = 'MixprecError';
    this.code = code;
  }
}
