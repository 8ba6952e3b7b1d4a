export {
  WebGLRenderer, Scene, PerspectiveCamera, OrthographicCamera, Color, Vector2, Vector3, Box3, Sphere,
  BufferGeometry, BufferAttribute, Float32BufferAttribute, Uint32BufferAttribute, Mesh, MeshLambertMaterial,
  MeshPhongMaterial, MeshBasicMaterial, LineSegments, LineBasicMaterial, Points, PointsMaterial, SphereGeometry,
  AmbientLight, DirectionalLight, HemisphereLight, Group, Raycaster, DoubleSide, FrontSide, Object3D,
  DataTexture, RGBAFormat, NearestFilter, LinearFilter, SRGBColorSpace, NoColorSpace, Matrix4, Quaternion,
} from 'three';
export { OrbitControls } from 'three/examples/jsm/controls/OrbitControls.js';
export const REVISION_BUNDLED = '0.187.0';
