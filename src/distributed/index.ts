// mixprec.distributed: the process group (init / allReduce / broadcast / barrier / destroy), the
// launcher, and the data-parallel gradient reducer the Trainer uses.
export { init, destroy, isInitialized, group, rank, worldSize, allReduce, broadcast, barrier, available } from './group';
export type { InitOptions, GroupInfo, DistBackend, ReduceOp } from './group';
export { launch } from './launch';
export type { LaunchOptions } from './launch';
export { GradientReducer, broadcastParameters, DEFAULT_BUCKET_BYTES } from './reducer';
